#!/usr/bin/env python3
"""Writes the C++ example that README.md shows (between the markers
<!-- example:begin --> and <!-- example:end -->) to a file, so that a test
compiles and runs exactly what the README says."""
import re
import sys

readme, out = sys.argv[1], sys.argv[2]
text = open(readme, encoding="utf-8").read()
m = re.search(r"<!-- example:begin -->\s*```cpp\n(.*?)```\s*<!-- example:end -->", text, re.S)
if not m:
    sys.exit("README.md has no example between the example markers")
with open(out, "w", encoding="utf-8") as f:
    f.write(m.group(1))
