"""The database layer: one SQLite file in the data dir (``sqlite``, guarded by ``disk``) or a
PostgreSQL database shared by several nodes (``postgres``), behind one ``base.Database``.

It knows no faces. It runs ``?``-parameter SQL that its owners write (the gallery's tables in
storage.py, history's in history_tables.py), creates and upgrades each owner's tables from the
``base.Schema`` the owner declares, and tells the other nodes what changed. What the rows
mean is the owners' business.
"""
