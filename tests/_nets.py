"""MONAI networks the acceptance tests build, given as factory + kwargs the way a user passes them."""

MONAI_NETS = {
    "unet2d": ("monai.networks.nets:UNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
                                           "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 2},
               "1x1x64x64"),
    "unet3d": ("monai.networks.nets:UNet", {"spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                                           "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1},
               "1x1x32x32x32"),
    "basicunet": ("monai.networks.nets:BasicUNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                                                   "features": [8, 8, 16, 32, 64, 8]}, "1x1x64x64"),
    "dynunet": ("monai.networks.nets:DynUNet", {"spatial_dims": 2, "in_channels": 1, "out_channels": 2,
                                               "kernel_size": [3, 3, 3], "strides": [1, 2, 2],
                                               "upsample_kernel_size": [2, 2]}, "1x1x64x64"),
    "segresnet": ("monai.networks.nets:SegResNet", {"spatial_dims": 2, "init_filters": 8, "in_channels": 1,
                                                   "out_channels": 2}, "1x1x64x64"),
    "densenet121": ("monai.networks.nets:DenseNet121", {"spatial_dims": 2, "in_channels": 1, "out_channels": 3},
                    "1x1x64x64"),
    "resnet2d": ("monai.networks.nets:resnet18", {"spatial_dims": 2, "n_input_channels": 1, "num_classes": 3},
                 "1x1x64x64"),
    "resnet3d": ("monai.networks.nets:resnet10", {"spatial_dims": 3, "n_input_channels": 1, "num_classes": 3},
                 "1x1x32x32x32"),
}
