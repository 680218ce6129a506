"""nyx.fec"""
