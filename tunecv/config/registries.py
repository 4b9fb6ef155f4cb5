"""The names the schema accepts for its choice keys, as plain lists: the config package stays free of torch and timm.

Each list has one implementation that maps its names (the optimizer factory, the scheduler factory, the data
stage's torchvision table); a test keeps them equal.
"""

# data layouts read from data_dir (tunecv.data.layouts), and the in-memory demo set
LAYOUTS = ("auto", "folder", "single_folder", "list", "csv", "aircraft", "digits")
# torchvision.datasets classes by their config name (tunecv.data.torchvision_sets.DATASETS)
TORCHVISION_DATASETS = ("cifar10", "cifar100", "flowers102", "fgvc_aircraft", "oxford_iiit_pet", "dtd", "food101",
                        "stanford_cars")
# MindCV's optimizer names; tunecv.optim.optimizers.MINDCV maps the ones timm spells otherwise (sgd: SGD with
# momentum, Nesterov by use_nesterov)
MINDCV_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "lion", "nadam", "adan", "rmsprop", "adagrad",
                     "lamb")
# every optimizer timm's create_optimizer_v2 builds by name (timm.optim.list_optimizers() of timm 1.0.31), but
# adahessian (REFUSED_OPTIMIZERS); bnb* (bitsandbytes) and fused* (APEX) run on CUDA only
TIMM_OPTIMIZERS = (
    "adabelief", "adadelta", "adafactor", "adafactorbv", "adafactorbvc", "adagrad", "adam", "adamax", "adamc",
    "adamp", "adamuon", "adamw", "adamwlegacy", "adan", "adanw", "adopt", "adoptc", "adoptw", "bnbadam",
    "bnbadam8bit", "bnbadamw", "bnbadamw8bit", "bnbademamix", "bnbademamix8bit", "bnblion", "bnblion8bit", "bnbsgd",
    "bnbsgd8bit", "cadafactor", "cadafactorbv", "cadafactorbvc", "cadamc", "cadamp", "cadamw", "cadan", "cadanw",
    "cadopt", "cadoptc", "cadoptw", "clamb", "clambw", "claprop", "clion", "clionc", "cmars", "cnadamc", "cnadamw",
    "crmsproptf", "csgdc", "csgdp", "csgdw", "fusedadam", "fusedadamw", "fusedlamb", "fusednovograd", "fusedsgd",
    "kron", "kronc", "kronw", "lamb", "lambc", "lambcd", "lambcw", "lambw", "laprop", "lapropc", "larc", "lars",
    "lion", "lionc", "madgrad", "madgradw", "mars", "momentum", "muon", "nadam", "nadamc", "nadamlegacy", "nadamuon",
    "nadamw", "nesterov", "nesterovw", "nlarc", "nlars", "nmuon", "novograd", "novogradc", "novogradw", "radabelief",
    "radam", "radamlegacy", "radamw", "rmsprop", "rmsproptf", "rmsproptfc", "rmsproptfw", "sgd", "sgdc", "sgdp",
    "sgdw")
OPTIMIZERS = tuple(dict.fromkeys((*MINDCV_OPTIMIZERS, *TIMM_OPTIMIZERS)))
# names timm knows that tunecv's train loop cannot drive, and why
REFUSED_OPTIMIZERS = {"adahessian": "it needs a second-order backward pass (create_graph=True), which the train loop "
                                    "does not run"}
# values a choice key refuses with their reason rather than as unknown
REFUSED_CHOICES = {"opt": REFUSED_OPTIMIZERS}
# tunecv.optim.schedulers.lr_factor computes each
SCHEDULERS = ("constant", "cosine_decay", "step_decay", "multi_step_decay", "exponential_decay", "polynomial_decay")
# tunecv.tasks.TASKS
TASKS = ("classification", "detection")
