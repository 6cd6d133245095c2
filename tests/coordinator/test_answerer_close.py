"""Closing the answerer after a re-plan, with a request still on the replaced deployment: the one served
now owns the event loop the replaced one closes its channels on, so it is closed last."""

from partition.coordinator.answer import Answerer
from partition.coordinator.deploy import Deployment
from partition.coordinator.loop import LoopThread
from partition.transport.channels import TransportConfig
from partition.transport.client import Chain


def deployment_on(loop: LoopThread, owns_loop: bool) -> Deployment:
    async def chain() -> Chain:  # channels to a port nothing listens on: closing them needs no server
        return Chain(["127.0.0.1:9"], TransportConfig())

    return Deployment(
        plan=None, topology=None, source=None, front_model=None, tail_model=None,
        chain=loop.run(chain()), addresses=("127.0.0.1:9",), clocks=(), loop=loop, owns_loop=owns_loop,
    )  # fmt: skip


def test_the_replaced_deployments_close_before_the_one_that_owns_the_loop():
    loop = LoopThread()
    replaced = deployment_on(loop, owns_loop=False)  # as replan.py hands the loop over
    serving = deployment_on(loop, owns_loop=True)
    answerer = Answerer.__new__(Answerer)  # only what close() reads: no deployment to start here
    answerer._retired, answerer.deployment = [replaced], serving
    answerer.close()
    assert replaced.chain is None and serving.chain is None  # both closed their channels
