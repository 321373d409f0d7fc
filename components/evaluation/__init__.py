"""evaluation stages."""
