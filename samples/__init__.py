"""Sample data askdb ships with: the Chinook database (`python -m samples.chinook build`)."""
