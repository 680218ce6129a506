"""nyx.bench"""
