"""PDF: the converter and its page work (edit), form checks (forms) and image placement (images)."""
