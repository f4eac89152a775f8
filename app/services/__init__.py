"""The operations of Convertd. Both APIs call these; neither holds a business rule."""
