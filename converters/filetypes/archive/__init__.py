"""Archives: the converter, reading (readers), writing (writers), the unpacking rules (safety)
and a minimal RAR 4 writer (rar4)."""
