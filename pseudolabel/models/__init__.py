"""Networks built from a name (:mod:`.backbones`: tinycnn, yolov8-cls, any timm model), their pretrained
weights (:mod:`.weights`), ultralytics' quirks (:mod:`.yolo`) and shared layers (:mod:`.layers`). No training."""
