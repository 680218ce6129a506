"""nyx.mix"""
