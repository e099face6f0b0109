"""persona-studio engine: body model, avatar, rasterizer, prep, frames, training, export.

Nothing in this package imports GUI code.
"""
