"""Raster images (converter) and the Pillow plugins for HEIF and JPEG XL."""
