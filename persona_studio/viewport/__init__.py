"""The studio's 3D viewport: an offscreen OpenGL splat renderer, its render thread, the GUI-free
controller (camera, scene hand-over, dirty check) and the Dear PyGui widget.

Integration entry: ``ViewportController.set_scene(means, colors, scales, opacities=None, label="",
frame_camera=False)``, callable from any thread.
"""
