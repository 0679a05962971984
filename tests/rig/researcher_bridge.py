"""Drive the real vantage6 UserClient (run with the rig's server venv, not the project's).

Usage: python researcher_bridge.py HOST PORT API_PATH USERNAME PASSWORD [PRIVATE_KEY]
Reads one JSON request per line on stdin, answers one JSON line per request.
"""
import json
import os
import sys


def main() -> None:
    # The client logs to stdout; keep the real stdout for answers only.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    from vantage6.client import UserClient  # noqa: PLC0415 - after the redirect

    host, port, api_path, username, password = sys.argv[1:6]
    private_key = sys.argv[6] if len(sys.argv) > 6 else None
    client = UserClient(host, int(port), api_path, log_level="warn")
    client.authenticate(username, password)
    client.setup_encryption(private_key)

    def create_task(collaboration, organizations, image, input, name="task", databases=None, description=""):
        return client.task.create(
            collaboration=collaboration,
            organizations=organizations,
            name=name,
            image=image,
            description=description,
            input_=input,
            databases=databases or [],
        )

    operations = {
        "create_task": create_task,
        "wait_for_results": lambda task_id, interval=0.2: client.wait_for_results(task_id, interval),
        "results": lambda task_id: client.result.from_task(task_id),
        "task": lambda task_id: client.task.get(task_id),
        "runs": lambda task_id: client.run.from_task(task_id),
        "kill_task": lambda task_id: client.task.kill(task_id),
    }
    print(json.dumps({"ok": True, "result": "ready"}), file=answers)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            result = operations[request["op"]](**request.get("args", {}))
            answer = {"ok": True, "result": result}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer, default=str), file=answers)


if __name__ == "__main__":
    main()
