"""PASS/FAIL lines and the closing count shared by the Python compat suites (compat/run.sh reads them)."""
import sys


class Checks:
    def __init__(self, name):
        self.name = name
        self.passed = self.failed = 0

    def __call__(self, what, cond):
        if cond:
            self.passed += 1
            print("PASS", what)
        else:
            self.failed += 1
            print("FAIL", what)

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)
