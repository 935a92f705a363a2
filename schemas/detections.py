"""What the anonymizer finds and redacts: the classes of detections.

Each detection belongs to one class, and each class has its own detector and
policy (``privacy.config.ClassPolicy``): detections of different classes are never
merged, and every count in audit events, the record and the report is kept per
class.
"""

from __future__ import annotations

FACE = "face"
PLATE = "plate"
TEXT = "text"
DETECTION_CLASSES = (FACE, PLATE, TEXT)
