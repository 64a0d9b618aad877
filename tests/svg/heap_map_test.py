"""The heap map (Heap::dump_svg) read back with a real XML parser.

Runs heap_map_fixture (its path is the first argument), which writes the map and the JSON stats
dump of heaps in known states, then checks each map: well-formed XML, and per arena the blocks
drawn (one by one or in aggregates) add up to the dump's live, quarantined and free block counts,
their bytes to its used, quarantined and free bytes, and the committed pages drawn to its
committed bytes. See codeheap/stats_svg.h for the attributes read here.
"""

import json
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

SVG = "{http://www.w3.org/2000/svg}"
FIXTURE = None  # set from argv in main
STATES = ("live", "quarantined", "free")


def run_fixture():
    out = tempfile.mkdtemp(dir=os.environ.get("TEST_TMPDIR"))
    subprocess.run([FIXTURE, out], check=True)
    return out


class Drawn:
    """What one arena's strip draws: blocks and bytes per state, as the first piece of each
    block or aggregate counts them, and the widths of all pieces."""

    def __init__(self, group):
        self.blocks = dict.fromkeys(STATES, 0)
        self.bytes = dict.fromkeys(STATES, 0)
        self.widths = dict.fromkeys(STATES, 0)
        self.committed = 0
        self.aggregates = 0
        self.collapsed = 0
        self.titles = []
        for rect in group.iter(SVG + "rect"):
            if rect.get("data-kind") == "committed":
                self.committed += int(rect.get("width"))
                continue
            state = rect.get("data-state")
            if state is None:
                continue
            self.titles.append(rect.find(SVG + "title").text)
            self.collapsed += "data-collapsed" in rect.attrib
            # The collapsed row at the top of an arena says what it stands for.
            self.widths[state] += int(rect.get("data-collapsed", rect.get("width")))
            if "data-blocks" in rect.attrib:
                self.blocks[state] += int(rect.get("data-blocks"))
                self.bytes[state] += int(rect.get("data-bytes"))
                self.aggregates += rect.get("class") == "aggregate"


class HeapMapTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.out = run_fixture()

    def load(self, name):
        with open(os.path.join(self.out, name + ".json"), encoding="utf-8") as f:
            stats = json.load(f)
        path = os.path.join(self.out, name + ".svg")
        tree = ET.parse(path)  # raises on malformed XML
        return stats, tree.getroot(), os.path.getsize(path)

    def check_arenas(self, stats, root):
        aggregated = root.get("data-aggregate-below") != "0"
        groups = {g.get("data-arena"): g for g in root.iter(SVG + "g") if g.get("data-arena")}
        self.assertEqual(sorted(groups), sorted(a["name"] for a in stats["arenas"]))
        drawn_all = {}
        for arena in stats["arenas"]:
            drawn = Drawn(groups[arena["name"]])
            name = arena["name"]
            self.assertEqual(drawn.blocks["live"], arena["live_blocks"], name)
            self.assertEqual(drawn.blocks["quarantined"], arena["quarantined_blocks"], name)
            self.assertEqual(drawn.blocks["free"], arena["free_blocks"], name)
            self.assertEqual(drawn.bytes["live"], arena["used_bytes"], name)
            self.assertEqual(drawn.bytes["quarantined"], arena["quarantined_bytes"], name)
            self.assertEqual(drawn.bytes["free"], arena["free_bytes"], name)
            self.assertEqual(drawn.committed, arena["committed_bytes"], name)
            if not aggregated:  # one rect per block (and row): the widths are the bytes
                self.assertEqual(drawn.widths, drawn.bytes, name)
            drawn_all[name] = drawn
        return drawn_all

    def test_single_blocks(self):
        stats, root, _ = self.load("single")
        self.assertEqual(root.get("data-aggregate-below"), "0")
        drawn = self.check_arenas(stats, root)
        self.assertEqual(sum(d.aggregates for d in drawn.values()), 0)
        # The heap used little of its arenas: their free tops are collapsed.
        self.assertEqual(drawn["code"].collapsed, 1)
        code = stats["arenas"][0]
        self.assertGreater(code["quarantined_blocks"], 0)
        self.assertGreater(code["free_blocks"], 1)  # gaps left by reclaimed blocks
        titles = "\n".join(drawn["code"].titles)
        # Owner names in tooltips, escaped on the way in and read back intact; the control
        # character replaced (XML 1.0 cannot carry it).
        self.assertIn("alpha (owner ", titles)
        self.assertIn("beta <&\"'> (owner ", titles)
        self.assertIn("gamma ? \u00e9 \U0001F600 (owner ", titles)
        text = "".join(root.itertext())
        self.assertIn('map "fixture" <&>', text)
        self.assertIn("largest free block", text)

    def test_aggregated(self):
        stats, root, size = self.load("aggregated")
        self.assertNotEqual(root.get("data-aggregate-below"), "0")
        drawn = self.check_arenas(stats, root)
        code = drawn["code"]
        self.assertGreater(code.aggregates, 0)
        self.assertGreater(stats["arenas"][0]["quarantined_blocks"], 0)
        # Aggregation keeps to a budget of rects, whatever the number of blocks.
        blocks = sum(a["live_blocks"] + a["quarantined_blocks"] + a["free_blocks"]
                     for a in stats["arenas"])
        self.assertGreater(blocks, 5000)
        self.assertLess(size, 1_000_000)


if __name__ == "__main__":
    FIXTURE = sys.argv.pop(1)
    unittest.main()
