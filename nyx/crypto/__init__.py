"""nyx.crypto"""
