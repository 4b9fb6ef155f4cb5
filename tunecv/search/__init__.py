"""The recipe search (sweep.py): a search space over config keys, an Optuna study whose trials are ordinary runs,
and the sweep's reports. Trains nothing itself: the entry script hands it the function that runs one trial."""
