"""One converter per filetype; a filetype that needs several modules is a package whose
`converter` module holds its Converter class."""
