def annotation_sources(wildcards):
    d = dataset(wildcards)
    selected = [
        names for names in d.get("select", {}).values() if isinstance(names, str)
    ]
    if d["type"] == "thumos14":
        return selected + sorted(
            str(p) for p in Path(d["annotations"]).glob("annotations_*/*.txt")
        )
    return selected + ([d["annotations"]] if "annotations" in d else [])


def sources_present(wildcards):
    """With missing: skip (or for a folder of videos), a digest of what the sources' folder (or
    file) holds: adding or removing a video reruns the annotations, so that the run takes what
    is there now."""
    d = dataset(wildcards)
    if d["type"] == "demo" or (d["missing"] != "skip" and d["type"] != "videos"):
        return ""
    path = Path(d["videos"] if d["type"] == "videos" else sources(d)[1])
    if not path.exists():
        return "absent"  # the annotations job says so
    listing = sorted(os.listdir(path)) if path.is_dir() else [path.stat().st_mtime_ns]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]


checkpoint annotations:
    input:
        annotation_sources,
    output:
        json="results/{ds}/annotations.json",
        classes="results/{ds}/classes.txt",
    log:
        "results/{ds}/logs/annotations.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        type=lambda wildcards: dataset(wildcards)["type"],
        args=lambda wildcards: annotation_options(dataset(wildcards)),
        sources_present=sources_present,
    shell:
        "actloc annotations --type {params.type} {params.args}"
        " --out {output.json:q} --classes {output.classes:q} 2> {log:q}"
