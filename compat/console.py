#!/usr/bin/env python3
"""The web console in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by selenium
from pip) against a 3-node cluster (N=3), through the first node's HTTP port. The page must load without console
errors, show 3 members and every partition of the ring, look up a key, show transfer progress while a fourth node
joins, and show a node as unreachable once it is killed, with the hints kept for it. A screenshot of each state goes to target/console/."""
import os
import shutil
import subprocess
import tempfile
import time

import redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from checks import Checks

BIN = os.environ.get("DYNAMO_KV_BIN", "target/debug/dynamo-kv")
BASE = int(os.environ.get("PORT", "7361"))
HTTP = BASE + 100
SHOTS = os.path.join("target", "console")
check = Checks("console")
dirs, nodes = [], {}


def start(i, *extra):
    d = tempfile.mkdtemp()
    dirs.append(d)
    args = [BIN, "serve", "--node-id", f"n{i}", "--listen", f"127.0.0.1:{BASE + i}",
            "--peer-listen", f"127.0.0.1:{BASE + 10000 + i}", "--data-dir", d + "/data",
            "--membership-interval-ms", "200", "--request-timeout-ms", "1000", *extra]  # fmt: skip
    if i > 1:
        args += ["--seeds", f"127.0.0.1:{BASE + 10001}"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert "ready" in p.stdout.readline().decode()
    nodes[i] = p


def settled(count):
    for i in nodes:
        if nodes[i].poll() is not None:
            continue
        info = redis.Redis(port=BASE + i).info("dynamo")
        if info.get("members") != count or info.get("ring_transition") != "none":
            return False
    return True


def wait_for(what, cond, timeout=60.0, every=0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if cond():
                return True
        except Exception:  # the page is between two renders: look again
            pass
        time.sleep(every)
    print(f"  (timed out waiting for {what})")
    return False


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1300"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


errors = []


def console_errors(driver):
    """Collects the browser console's errors since the last call."""
    errors.extend(e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE")
    return errors


def shot(driver, name):
    os.makedirs(SHOTS, exist_ok=True)
    driver.save_screenshot(os.path.join(SHOTS, name))


def attr(driver, selector, name):
    return driver.find_element(By.CSS_SELECTOR, selector).get_attribute(name)


driver = None
try:
    start(1, "--http-listen", f"127.0.0.1:{HTTP}")
    start(2)
    start(3)
    check("the 3-node cluster settles", wait_for("3 members", lambda: settled(3)))
    r = redis.Redis(port=BASE + 1)
    pipe = r.pipeline(transaction=False)
    for i in range(20000):
        pipe.set(f"console:{i}", "v" * 100)
    pipe.execute()

    driver = browser()
    driver.get(f"http://127.0.0.1:{HTTP}/")
    rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#members tbody tr")  # noqa: E731
    check("the page shows 3 members", wait_for("3 rows", lambda: len(rows()) == 3))
    q = int(redis.Redis(port=BASE + 1).info("dynamo")["partitions"])
    arcs = lambda: driver.find_elements(By.CSS_SELECTOR, "#ring path.partition")  # noqa: E731
    check(f"the ring shows its {q} partitions", wait_for("arcs", lambda: len(arcs()) == q))
    check("every member is up", all(row.get_attribute("data-status") == "up" for row in rows()))
    # N=3 on 3 nodes: each holds every key, and says so over the peer protocol.
    check("each member reports its load",
          wait_for("load", lambda: all(int(row.get_attribute("data-live-keys") or 0) > 0 for row in rows())))
    check("the summary says it serves", "serving" in driver.find_element(By.ID, "cluster-state").text)
    check("request rates are measured", wait_for("rates", lambda: attr(driver, "#rates", "data-rate") is not None))
    driver.find_element(By.ID, "key-input").send_keys("console:42")
    driver.find_element(By.CSS_SELECTOR, "#key-form button").click()
    replicas = lambda: driver.find_element(By.ID, "key-replicas").text.split(", ")  # noqa: E731
    check("a key lookup names its 3 replicas", wait_for("lookup", lambda: sorted(replicas()) == ["n1", "n2", "n3"]))
    shot(driver, "1-cluster.png")
    check("no console errors on load", console_errors(driver) == [])

    # A fourth node joins: the transition's progress shows while its transfers run.
    start(4)
    progress = []

    def in_progress():
        if attr(driver, "#transition", "data-in-progress") != "true":
            return False
        total = int(attr(driver, "#transition", "data-transfers-total"))
        done = int(attr(driver, "#transition", "data-transfers-done"))
        bars = driver.find_elements(By.CSS_SELECTOR, "#transition .transfers [data-transfer]")
        progress.append((done, total, len(bars)))
        return total > 0 and done < total and len(bars) == total

    check("a join shows its transfers in progress", wait_for("transition", in_progress, timeout=60, every=0.1))
    shot(driver, "2-join.png")
    print(f"  progress seen (done, total, bars): {progress[-1] if progress else None}")
    check("the join completes: 4 members, no transition",
          wait_for("joined", lambda: len(rows()) == 4 and attr(driver, "#transition", "data-in-progress") == "false",
                   timeout=120))  # fmt: skip
    shot(driver, "3-joined.png")

    # A node is killed: the page shows it unreachable.
    nodes[3].kill()
    nodes[3].wait()
    n3 = lambda: driver.find_element(By.CSS_SELECTOR, '#members tr[data-member-id="n3"]')  # noqa: E731
    check("a killed node shows as unreachable",
          wait_for("unreachable", lambda: n3().get_attribute("data-status") == "unreachable", timeout=30))
    check("the summary counts it", "3/4 up" in driver.find_element(By.ID, "summary").text)
    # Writes for n3 go to fallbacks with hints; those this node holds show per target.
    for i in range(300):
        r.set(f"hinted:{i}", "v")
    check("hints for the killed node show",
          wait_for("hints", lambda: driver.find_elements(By.CSS_SELECTOR, '#hints [data-hint-target="n3"]'), timeout=20))
    shot(driver, "4-unreachable.png")
    check("no console errors throughout", console_errors(driver) == [])
    if errors:
        print("  console errors:", errors[:5])
finally:
    if driver:
        driver.quit()
    for p in nodes.values():
        p.kill()
        p.wait()
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)

check.finish()
