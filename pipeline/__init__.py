"""Training, folding, export and parity checking for the foldserve digit CNN."""
