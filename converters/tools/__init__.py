"""Programs and libraries several filetypes share: LibreOffice, pandoc, ffmpeg, fonts, metadata."""
