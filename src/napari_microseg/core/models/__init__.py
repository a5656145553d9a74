"""Model families (U-Net, SegNet, Micro-Net, Mask R-CNN), checkpoints and the registry.

Importing this package does not import torch; each architecture module does.
"""
