"""nyx.telemetry"""
