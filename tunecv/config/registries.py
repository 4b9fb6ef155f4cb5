"""The names the schema accepts for its choice keys, as plain lists: the config package stays free of torch and timm.

Each list has one implementation that maps its names (the optimizer factory, the scheduler factory, the data
stage's torchvision table); a test keeps them equal.
"""

# data layouts read from data_dir (tunecv.data.layouts), and the in-memory demo set
LAYOUTS = ("auto", "folder", "single_folder", "list", "csv", "aircraft", "digits")
# torchvision.datasets classes by their config name (tunecv.data.torchvision_sets.DATASETS)
TORCHVISION_DATASETS = ("cifar10", "cifar100", "flowers102", "fgvc_aircraft", "oxford_iiit_pet", "dtd", "food101",
                        "stanford_cars")
# tunecv.optim.optimizers.OPTIMIZERS maps each to timm's name
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad", "nadam", "lamb")
# tunecv.optim.schedulers.lr_factor computes each
SCHEDULERS = ("constant", "cosine_decay", "step_decay", "multi_step_decay", "exponential_decay", "polynomial_decay")
# tunecv.tasks.TASKS
TASKS = ("classification", "detection")
