"""The report's facts and its two writers: `facts` answers what the README and the paper ask
(which runs exist, their data, what is missing and why, targets, the seed's claims), `words`
phrases those answers as plain text, `latex`/`paper`/`paper_figures` write the paper's fragments
and `markdown`/`readme` the README's results section. Nothing is imported here."""
