"""The quickstart's data (150 invented news texts with reference summaries, and 6 scored samples),
installed as package data `moalign.quickstart`: see `moalign.data.quickstart_data`."""
