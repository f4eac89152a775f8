"""Who is calling: credentials from any transport turned into a Principal, or an error."""
