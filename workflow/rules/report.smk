rule report:
    input:
        maps=per_method("map.csv"),
        summaries=per_method("train.json"),
    output:
        csv="results/{ds}/map.csv",
        md="results/{ds}/map.md",
    log:
        "results/{ds}/logs/report.log",
    conda:
        "../../envs/actloc.yaml"
    params:
        methods=methods_of,
    shell:
        "actloc report --methods {params.methods} --maps {input.maps:q} --summaries {input.summaries:q}"
        " --out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"
