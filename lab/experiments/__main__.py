"""`python -m lab.experiments EXP_ID --data-dir D`: an experiment's driver process (started by
lab.experiments.driver.launch; see that module)."""
import sys

from lab.experiments.driver import main

sys.exit(main())
