"""Model construction and loading shared by training, evaluation and serving."""
