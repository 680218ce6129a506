"""nyx.transport"""
