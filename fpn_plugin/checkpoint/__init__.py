"""Loading weights in every format users bring (torchvision, Caffe, detectron2 model zoo)."""
