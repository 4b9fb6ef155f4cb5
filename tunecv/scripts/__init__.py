"""The command-line programs: `finetune`, `validate`, `predict`, `export`. Each has `main(argv) -> exit code`,
run by the top-level scripts (`python finetune.py`) and the console scripts (`tunecv-finetune`) alike."""
