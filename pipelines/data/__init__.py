"""The project's data, installed as package data `moalign.quickstart` (see `moalign.data.quickstart_data`):
`summaries.jsonl`, the quickstart's 150 invented news texts with reference summaries; `news.jsonl`
and `headlines.jsonl`, 440 more invented texts (written for the front benchmark, none shared with
the quickstart's) with a reference summary and a reference headline; `samples.jsonl`, 6 scored samples."""
