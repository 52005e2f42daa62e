"""DFT data generation (``gears_h datagen``, extra ``[dft]``; SPEC §3).

``pyscf_run`` (molecules) and ``gpaw_run`` (periodic LCAO) produce float64 blocks in our
orbital order (`blocks.DFTBlocks`); ``realspace`` turns GPAW's Bloch matrices into
real-space blocks; ``writer`` writes a snapshot folder atomically after ``checks`` passed;
``sampling`` draws seeded structures; ``frames`` reads the inputs; ``worker`` runs one
structure; ``command`` is the CLI. Importing this package imports nothing heavy.
"""
