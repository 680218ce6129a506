"""nyx.cover"""
