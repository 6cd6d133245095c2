"""A stand-in worker for lab tests: echoes every byte back on each connection. Usage: echo_server.py HOST:PORT"""

import socket
import sys
import threading


def handle(connection: socket.socket) -> None:
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with connection:
        while data := connection.recv(1 << 16):
            connection.sendall(data)


def main() -> None:
    host, _, port = sys.argv[1].rpartition(":")
    server = socket.create_server((host, int(port)))
    print(f"echo server on {host}:{port}", flush=True)
    while True:
        connection, _ = server.accept()
        threading.Thread(target=handle, args=(connection,), daemon=True).start()


if __name__ == "__main__":
    main()
