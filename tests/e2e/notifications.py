"""A stand-in desktop notification service for tests: owns org.freedesktop.Notifications on the
(private) session bus, appends every Notify call to a JSON-lines file, and then "clicks" each
notification that offers a default action, as a person would."""

import asyncio
import json
import sys

from dbus_next.aio import MessageBus
from dbus_next.service import ServiceInterface, method, signal


class Notifications(ServiceInterface):
    def __init__(self, path):
        super().__init__("org.freedesktop.Notifications")
        self.path = path
        self.count = 0

    @method()
    def Notify(self, app_name: "s", replaces_id: "u", app_icon: "s", summary: "s", body: "s",
               actions: "as", hints: "a{sv}", expire_timeout: "i") -> "u":
        self.count += 1
        with open(self.path, "a") as f:
            f.write(json.dumps({"app": app_name, "summary": summary, "body": body,
                                "actions": actions}) + "\n")
        if "default" in actions:
            asyncio.get_running_loop().call_later(0.5, self.ActionInvoked, self.count, "default")
        return self.count

    @signal()
    def ActionInvoked(self, id, key) -> "us":
        return [id, key]

    @method()
    def GetCapabilities(self) -> "as":
        return ["body", "actions"]

    @method()
    def GetServerInformation(self) -> "ssss":
        return ["keyward-test-notifications", "keyward", "1.0", "1.2"]

    @method()
    def CloseNotification(self, id: "u"):
        return None


async def main():
    bus = await MessageBus().connect()
    bus.export("/org/freedesktop/Notifications", Notifications(sys.argv[1]))
    await bus.request_name("org.freedesktop.Notifications")
    print("notifications: ready", flush=True)
    await asyncio.get_running_loop().create_future()


asyncio.run(main())
