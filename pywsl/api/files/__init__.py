"""Root's work on folders users own: reached by descriptors, checked, never followed; archives in and out."""
