"""``xmodel facets``: facet-facet interactions of the twelve nearest neighbours (Fig. 5, S12)."""
from __future__ import annotations

import json

from xmodel.commands._common import add_command, add_json_arg

#: the defaults of `fits.analyses.facets` (31 and 34 A facet distances, 33 deg), repeated here so that
#: building the parser does not import JAX; a test checks that they agree
DEFAULT_D100, DEFAULT_D111, DEFAULT_MAX_ANGLE_DEG = 31.0, 34.0, 33.0


def run(args) -> int:
    from fits.analyses.facets import facet_interactions

    table = facet_interactions(args.configuration, d100=args.d100, d111=args.d111,
                               max_angle_deg=args.max_angle)
    print(json.dumps(table.as_dict(), indent=1) if args.json else table.format())
    return 0


def add_parser(sub) -> None:
    p = add_command(sub, "facets", "{100}/{111} facet interactions of nearest neighbours (Fig. 5)")
    p.add_argument("--configuration", required=True, choices=["conf1", "conf2"],
                   help="AL-SL orientation relationship (Fig. 5)")
    p.add_argument("--d100", type=float, default=DEFAULT_D100, help="{100} facet distance from the NC centre (A)")
    p.add_argument("--d111", type=float, default=DEFAULT_D111, help="{111} facet distance from the NC centre (A)")
    p.add_argument("--max-angle", type=float, default=DEFAULT_MAX_ANGLE_DEG,
                   help="largest angle between a neighbour and its facet normal (deg)")
    add_json_arg(p, "the interaction table")
    p.set_defaults(func=run)
