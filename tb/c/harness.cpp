// Verilator main around soc_top (tb/hdl/soc_top.v: convcore_dma and its RAM): the C driver
// (sw/convcore.c) runs an exported image (`convcore export`: memory.hex, convcore_image.h)
// through the register hooks below, which are AXI4-Lite transactions on the s_axil pins.
//
//   harness +mem=memory.hex +dump=dump.hex [--layers] [--max-cycles N]
//
// Default: the whole queue from CONVCORE_IMAGE_HEAD, its end seen on irq. --layers: each
// descriptor of convcore_image_layer_descriptors on its own (cc_run_layer, polling Q_STATUS).
// Prints one line (the counters, or the error decoded by the driver), dumps the RAM (dump
// pulse) and exits 0 when every descriptor ran; 1 when the queue stopped at a descriptor; 2 on
// a timeout, a bus error or bad arguments; 3 when a count differs from the image's.
//
// Build (sim/test_c_driver.py does it): verilator --cc --exe --build --top-module soc_top
// with soc_top.v, axi_ram.v, convcore_dma.v, this file and sw/convcore.c, -CFLAGS with -I for
// sw/, the generated headers and the export folder, and -DCONVCORE_RAM_ADDR_WIDTH=N matching
// -GRAM_ADDR_WIDTH=N.
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "Vsoc_top.h"
#include "verilated.h"

#include "convcore.h"
#include "convcore_dma.h"
#include "convcore_image.h"
#include "convcore_queue_regs.h"

#ifndef CONVCORE_RAM_ADDR_WIDTH
#error "define CONVCORE_RAM_ADDR_WIDTH as soc_top's RAM_ADDR_WIDTH"
#endif
static_assert(CONVCORE_IMAGE_MEMORY_BYTES <= (1ull << CONVCORE_RAM_ADDR_WIDTH),
              "the image does not fit soc_top's RAM: raise RAM_ADDR_WIDTH");

namespace {

constexpr int EXIT_QUEUE = 1, EXIT_HARNESS = 2, EXIT_COUNT = 3;
constexpr uint64_t RESET_CYCLES = 8;
// An AXI4-Lite transaction must end within this many cycles.
constexpr uint64_t BUS_TIMEOUT_CYCLES = 1000;
constexpr uint32_t AXI_OKAY = 0;
constexpr uint32_t WSTRB_ALL = 0xF;

struct Soc {
    Vsoc_top *top;
    uint64_t cycles = 0;

    void tick() {
        top->clk = 1;
        top->eval();
        top->clk = 0;
        top->eval();
        cycles++;
    }
};

[[noreturn]] void fail(int status, const char *what, uint32_t offset, const Soc &soc) {
    std::printf("convcore: harness error: %s at offset 0x%03" PRIx32 " (cycle %" PRIu64 ")\n",
                what, offset, soc.cycles);
    std::exit(status);
}

void axil_write(void *ctx, uint32_t offset, uint32_t value) {
    Soc &soc = *static_cast<Soc *>(ctx);
    Vsoc_top *t = soc.top;
    t->s_axil_awaddr = offset;
    t->s_axil_awprot = 0;
    t->s_axil_awvalid = 1;
    t->s_axil_wdata = value;
    t->s_axil_wstrb = WSTRB_ALL;
    t->s_axil_wvalid = 1;
    t->s_axil_bready = 1;
    for (uint64_t start = soc.cycles; soc.cycles - start < BUS_TIMEOUT_CYCLES;) {
        t->eval();
        const bool aw = t->s_axil_awvalid && t->s_axil_awready;
        const bool w = t->s_axil_wvalid && t->s_axil_wready;
        const bool b = t->s_axil_bvalid;
        const uint32_t resp = t->s_axil_bresp;
        soc.tick();
        if (aw) t->s_axil_awvalid = 0;
        if (w) t->s_axil_wvalid = 0;
        if (b) {
            t->s_axil_bready = 0;
            if (resp != AXI_OKAY) fail(EXIT_HARNESS, "write answered with an error", offset, soc);
            return;
        }
    }
    fail(EXIT_HARNESS, "write not answered", offset, soc);
}

uint32_t axil_read(void *ctx, uint32_t offset) {
    Soc &soc = *static_cast<Soc *>(ctx);
    Vsoc_top *t = soc.top;
    t->s_axil_araddr = offset;
    t->s_axil_arprot = 0;
    t->s_axil_arvalid = 1;
    t->s_axil_rready = 1;
    for (uint64_t start = soc.cycles; soc.cycles - start < BUS_TIMEOUT_CYCLES;) {
        t->eval();
        const bool ar = t->s_axil_arvalid && t->s_axil_arready;
        const bool r = t->s_axil_rvalid;
        const uint32_t data = t->s_axil_rdata, resp = t->s_axil_rresp;
        soc.tick();
        if (ar) t->s_axil_arvalid = 0;
        if (r) {
            t->s_axil_rready = 0;
            if (resp != AXI_OKAY) fail(EXIT_HARNESS, "read answered with an error", offset, soc);
            return data;
        }
    }
    fail(EXIT_HARNESS, "read not answered", offset, soc);
}

// "ALIGN: <text> at descriptor 0x..." and, for ENGINE, the engine's code.
void print_error(const cc_queue_status &st) {
    std::printf("queue error %s: %s; at descriptor 0x%08" PRIx32 " after %" PRIu32
                " completed", cc_queue_error_name(st.error), cc_queue_error_text(st.error),
                st.current, st.completed);
    if (st.error == CONVCORE_QUEUE_Q_STATUS_Q_ERROR_ENGINE)
        std::printf("; engine error %s: %s", cc_engine_error_name(st.engine_error),
                    cc_engine_error_text(st.engine_error));
}

}  // namespace

int main(int argc, char **argv) {
    auto *context = new VerilatedContext;
    context->commandArgs(argc, argv);
    bool layers = false;
    uint64_t max_cycles = 50'000'000;
    for (int i = 1; i < argc; i++) {
        if (!std::strcmp(argv[i], "--layers")) {
            layers = true;
        } else if (!std::strcmp(argv[i], "--max-cycles") && i + 1 < argc) {
            max_cycles = std::strtoull(argv[++i], nullptr, 0);
        } else if (argv[i][0] != '+') {
            std::printf("convcore: harness error: unknown argument '%s' (give +mem=FILE "
                        "+dump=FILE [--layers] [--max-cycles N])\n", argv[i]);
            return EXIT_HARNESS;
        }
    }
    Soc soc{new Vsoc_top{context}};
    Vsoc_top *t = soc.top;
    t->clk = 0;
    t->dump = 0;
    t->rst = 1;
    for (uint64_t i = 0; i < RESET_CYCLES; i++) soc.tick();
    t->rst = 0;
    soc.tick();

    cc_device dev;
    int rc = cc_init(&dev, axil_read, axil_write, &soc);
    cc_hw hw;
    if (rc == CC_OK) rc = cc_read_hw(&dev, &hw);
    if (rc != CC_OK) {
        std::printf("convcore: harness error: %s\n", cc_rc_text(rc));
        return EXIT_HARNESS;
    }
    if (hw.bus_bytes != CONVCORE_IMAGE_BUS_BYTES || hw.pe != CONVCORE_IMAGE_PE
        || hw.simd != CONVCORE_IMAGE_SIMD) {
        std::printf("convcore: harness error: the image is for a %u-byte bus, PE %u, SIMD %u; "
                    "the hardware has %" PRIu32 ", %" PRIu32 ", %" PRIu32 "\n",
                    CONVCORE_IMAGE_BUS_BYTES, CONVCORE_IMAGE_PE, CONVCORE_IMAGE_SIMD,
                    hw.bus_bytes, hw.pe, hw.simd);
        return EXIT_HARNESS;
    }

    cc_queue_status st{};
    uint64_t queue_cycles = 0;
    uint32_t completed = 0;
    const uint64_t start = soc.cycles;
    if (!layers) {
        rc = cc_queue_start(&dev, CONVCORE_IMAGE_HEAD, true);
        while (rc == CC_OK && !t->irq && soc.cycles - start < max_cycles) soc.tick();
        if (rc == CC_OK) rc = t->irq ? cc_queue_poll(&dev, &st) : CC_ERR_TIMEOUT;
        cc_counters c;
        if (rc != CC_ERR_TIMEOUT && cc_read_counters(&dev, &c) == CC_OK) {
            queue_cycles = c.queue_cycles;
            completed = c.completed;
        }
    } else {
        for (uint32_t i = 0; i < CONVCORE_IMAGE_DESCRIPTORS; i++) {
            // Q_STATUS reads take a few cycles each: polls bound the cycles left
            const uint64_t left = max_cycles - (soc.cycles - start);
            rc = cc_run_layer(&dev, convcore_image_layer_descriptors[i],
                              static_cast<uint32_t>(left < UINT32_MAX ? left : UINT32_MAX), &st);
            cc_counters c;
            if (rc != CC_ERR_TIMEOUT && cc_read_counters(&dev, &c) == CC_OK)
                queue_cycles += c.queue_cycles;
            if (rc != CC_OK) break;
            completed += st.completed;
            if (soc.cycles - start >= max_cycles) {
                rc = CC_ERR_TIMEOUT;
                break;
            }
        }
    }

    int status = 0;
    std::printf("convcore: %s: ", layers ? "layers" : "queue");
    if (rc == CC_OK) {
        cc_counters c;
        cc_read_counters(&dev, &c);
        std::printf("ok, %" PRIu32 " of %u descriptors, %" PRIu64 " cycles (Q_CYCLES); "
                    "engine, last layer: %" PRIu64 " cycles, %" PRIu64 " MAC cycles, %" PRIu64
                    " starved, %" PRIu64 " stalled; %" PRIu64 " simulated cycles",
                    completed, CONVCORE_IMAGE_DESCRIPTORS, queue_cycles, c.cycles, c.mac_cycles,
                    c.starved_cycles, c.stalled_cycles, soc.cycles);
        if (completed != CONVCORE_IMAGE_DESCRIPTORS) status = EXIT_COUNT;
    } else if (rc == CC_ERR_QUEUE) {
        print_error(st);
        status = EXIT_QUEUE;
    } else {
        std::printf("%s after %" PRIu64 " cycles", cc_rc_text(rc), soc.cycles - start);
        status = EXIT_HARNESS;
    }
    std::printf("\n");

    t->dump = 1;
    soc.tick();
    t->dump = 0;
    soc.tick();
    t->final();
    delete t;
    delete context;
    return status;
}
