"""The embedded sample data set: real photographs from packages and their simulated-AI twins."""
