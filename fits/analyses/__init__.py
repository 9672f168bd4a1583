"""The paper's analyses of a scanned film, beside the inversion of `fits`.

* `classify`: domain classification of the SL and AL ring profiles (Fig. 1a,b).
* `peak_profile`, `shell_comb`, `qmap`: radial peak fits, the fcc shell comb and the
  q_200 / q_311 maps and line profiles (Fig. 3, S7, Table S1).
* `indexing`: fcc indexing of SL peaks (Table S1).
* `disorder`: NC orientational disorder from AL peak widths (Eq. 7, Table S2).
* `xcca`: X-ray cross-correlation functions with masks (Eqs. 1-6, Fig. 2).
* `facets`: facet interactions between neighbouring NCs (Fig. 5, S12).
* `arguments`: validation of the analyses' numeric arguments (name, option, value, range).
"""
