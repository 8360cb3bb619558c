"""The model contract shared by export and serving (``DESIGN.md``), free of heavy imports.

Input ``image`` float32 NHWC ``[N, H, W, 3]`` with raw 0–255 RGB (normalisation inside the
graph); output ``probability_ai`` ``[N, 1]``. H, W, the threshold and the class names travel in
the ONNX metadata (``input_height``, ``input_width``, ``threshold``, ``class_names``).
"""

from typing import Final

INPUT_NAME: Final = "image"
OUTPUT_NAME: Final = "probability_ai"
CLASS_NAMES: Final = ("human", "ai")
