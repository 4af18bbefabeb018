"""The Slicer side of MRIDenoise without any GUI: MRML node adapter and the module logic.

Imports ``slicer`` (MRML and slicer.util) but never qt or ctk, so it runs inside Slicer and
against the ``slicer-core`` wheel in plain pytest alike.
"""
