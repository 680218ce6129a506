"""nyx.stream"""
