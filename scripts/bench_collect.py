"""scripts/bench-collect's helpers: generate an ALB access log, and the
straightforward Python baseline that reads it the way firebreak collect
does (parse, enrich with GeoIP city and ASN, match the same signatures).

    bench_collect.py generate FILE LINES
    bench_collect.py baseline FILE GEOIP_DIR THREAT_LIST   -> "seconds records"
"""

import glob
import ipaddress
import os
import random
import re
import sys
import time
from urllib.parse import unquote_plus

LINE = (
    'https {t} app/web-alb/50dc6c495c0c9188 {ip}:{port} 10.0.{tg}.12:80 0.000 0.004 0.000 {code} {code} 312 {sent} '
    '"GET https://shop.example.com:443{path} HTTP/1.1" "{ua}" ECDHE-RSA-AES128-GCM-SHA256 TLSv1.2 '
    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/73e2d6bc24d8a067 "
    '"Root=1-58337262-36d228ad5d99923122bbe{n:06d}" "shop.example.com" "-" 1 {t} "forward" "-" "-" '
    '"10.0.{tg}.12:80" "{code}" "Acceptable" "-" TID_{n:016x}'
)
PATHS = ["/", "/products?id={n}&sort=price", "/cart", "/static/app.js", "/search?q=red+shoes", "/api/v1/items/{n}"]
ATTACKS = [
    "/?id=1%27%20OR%20%271%27=%271",
    "/?id=1'%20UNION%20SELECT%20username,password%20FROM%20users--",
    "/search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E",
]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64)", "curl/8.0", "ELB-HealthChecker/2.0"]


def generate(path, lines):
    rnd = random.Random(42)
    # Addresses: some in the test databases' ranges, most not.
    pool = [f"81.2.69.{142 + i % 2}" for i in range(2)] + [f"89.160.20.{130 + i}" for i in range(100)]
    pool += [f"216.160.83.{56 + i % 8}" for i in range(8)] + [f"198.51.100.{i}" for i in range(50)]
    pool += [f"100.{rnd.randrange(64, 128)}.{rnd.randrange(256)}.{rnd.randrange(256)}" for _ in range(4000)]
    with open(path, "w") as f:
        for n in range(lines):
            attack = n % 100 == 7
            p = ATTACKS[n % 3] if attack else PATHS[n % len(PATHS)].format(n=n)
            t = f"2025-06-12T17:{(n // 60000) % 60:02d}:{(n // 1000) % 60:02d}.{n % 1000:03d}000Z"
            f.write(
                LINE.format(t=t, ip=rnd.choice(pool), port=1024 + n % 60000, tg=n % 4, code=200, sent=1000 + n % 999,
                            path=p, ua=AGENTS[n % 3], n=n)
                + "\n"
            )


SQL = ["' or '", "' or 1=1", '" or "', " or 1=1", "union select", "union all select", "sleep(", "benchmark(",
       "waitfor delay", "information_schema", "xp_cmdshell", "; drop table", ";drop table", "'--", "' --", "';",
       "@@version", "load_file(", "into outfile"]
XSS = ["<script", "javascript:", "onerror=", "onload=", "onmouseover=", "<svg", "<iframe", "document.cookie",
       "alert(", "<img src="]
FIELDS = re.compile(r'"((?:[^"\\]|\\.)*)"|(\S+)')


def baseline(path, geo_dir, threats_path):
    import maxminddb

    city = maxminddb.open_database(glob.glob(os.path.join(geo_dir, "*City*.mmdb"))[0])
    asn = maxminddb.open_database(glob.glob(os.path.join(geo_dir, "*ASN*.mmdb"))[0])
    nets = [ipaddress.ip_network(l.split("#")[0].strip(), strict=False)
            for l in open(threats_path) if l.split("#")[0].strip()]
    cache = {}
    records = detections = 0
    start = time.perf_counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = [a or b for a, b in FIELDS.findall(line.rstrip("\n"))]
            if len(fields) < 17:
                continue
            ip_s = fields[3].rsplit(":", 1)[0].strip("[]")
            records += 1
            if ip_s not in cache:
                c, a = city.get(ip_s), asn.get(ip_s)
                cache[ip_s] = (
                    ((c or {}).get("country") or {}).get("iso_code"),
                    (((c or {}).get("city") or {}).get("names") or {}).get("en"),
                    (a or {}).get("autonomous_system_number"),
                )
            request = fields[12].split(" ")
            url = unquote_plus(unquote_plus(request[1])).lower() if len(request) > 1 else ""
            hit = any(s in url for s in SQL) or any(s in url for s in XSS)
            ip = ipaddress.ip_address(ip_s)
            hit = any(ip in n for n in nets) or hit
            detections += hit
    print(f"{time.perf_counter() - start:.3f} {records}")


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2], int(sys.argv[3]))
    else:
        baseline(sys.argv[2], sys.argv[3], sys.argv[4])
