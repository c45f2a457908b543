def annotation_sources(wildcards):
    d = dataset(wildcards)
    if d["type"] == "thumos14":
        return sorted(
            str(p) for p in Path(d["annotations"]).glob("annotations_*/*.txt")
        )
    return [d["annotations"]] if "annotations" in d else []


def annotation_args(wildcards):
    d = dataset(wildcards)
    if d["type"] == "demo":
        return demo_args(wildcards)
    args = ["--source", d["annotations"], "--out-of-range", d["out_of_range"]]
    if d["type"] == "activitynet":
        args += ["--video-prefix", d["video_prefix"]]
    if "metadata" in d:
        args += ["--metadata", d["metadata"]]
    return shlex.join(args)


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
        args=annotation_args,
    shell:
        "actloc annotations --type {params.type} {params.args}"
        " --out {output.json:q} --classes {output.classes:q} 2> {log:q}"
