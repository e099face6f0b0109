"""Quality benchmark pieces: image metrics against ground truth and the compared methods."""
