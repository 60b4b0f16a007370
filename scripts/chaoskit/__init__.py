"""The chaos run of scripts/chaos.py, in small parts."""
