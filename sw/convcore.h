/* convcore C driver: runs layer queues on the DMA front end (rtl/dma_engine.py).
 *
 * C99, freestanding: stdint.h, stddef.h and stdbool.h only; no allocation, no printing, no
 * exits (every function returns a cc_rc code). It includes three generated headers, never
 * committed (`python -m sim.export --headers DIR` writes them; `convcore export` writes them
 * beside an image):
 *   convcore_engine_regs.h  the engine's register map (rtl/engine_regs.py)
 *   convcore_queue_regs.h   the layer queue's register map (rtl/dma_regs.py QUEUE_REGMAP)
 *   convcore_dma.h          the two windows' bases, the descriptor, the error codes and texts
 *
 * Registers are reached through two hooks on the front end's AXI4-Lite port (byte offsets:
 * the engine's window at CONVCORE_DMA_ENGINE_BASE, the queue's at CONVCORE_DMA_QUEUE_BASE):
 * cc_mmio_read32/cc_mmio_write32 for a CPU that maps the port at a base address
 * (cc_init_mmio), or any other pair, e.g. a simulator's bus functional model (tb/c/harness.cpp).
 *
 * The descriptors, parameters and buffers are in memory already (sim/queue_image.py builds
 * them; `convcore export` writes them as memory.hex and their addresses as convcore_image.h).
 *
 *   cc_device dev;
 *   cc_queue_status st;
 *   cc_init_mmio(&dev, (volatile void *)0x40000000u);
 *   rc = cc_run_queue(&dev, CONVCORE_IMAGE_HEAD, 1000000u, &st);
 *   if (rc == CC_ERR_QUEUE) puts(cc_queue_error_text(st.error));
 */
#ifndef CONVCORE_H
#define CONVCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes: 0 or above is not an error. */
typedef enum cc_rc {
    CC_OK = 0,              /* done: the queue ran every descriptor */
    CC_RUNNING = 1,         /* the queue still runs (cc_queue_poll) */
    CC_ERR_ARG = -1,        /* a null pointer */
    CC_ERR_NO_DEVICE = -2,  /* Q_HW does not read as a convcore queue of this driver's descriptor */
    CC_ERR_BUSY = -3,       /* the queue runs: it cannot start, and the engine's registers are its */
    CC_ERR_TIMEOUT = -4,    /* the queue did not end within the polls allowed */
    CC_ERR_QUEUE = -5,      /* the queue stopped at a descriptor: see cc_queue_status.error */
    CC_ERR_CHAIN = -6       /* cc_run_layer: more than one descriptor ran (next was not 0) */
} cc_rc;

typedef uint32_t (*cc_read32_fn)(void *ctx, uint32_t offset);
typedef void (*cc_write32_fn)(void *ctx, uint32_t offset, uint32_t value);

/* One DMA front end: its register hooks and the bus width cc_init read. */
typedef struct cc_device {
    cc_read32_fn read32;
    cc_write32_fn write32;
    void *ctx;              /* passed to the hooks (cc_init_mmio: the base address) */
    uint32_t bus_bytes;     /* Q_HW.q_bus_bytes: the memory bus beat; buffers align to it */
} cc_device;

/* The hardware parameters (HW_* registers of the engine, Q_HW of the queue). */
typedef struct cc_hw {
    uint32_t pe, simd, max_kernel, max_stride, max_dilation;
    uint32_t max_height, max_width, max_channels;
    uint32_t weight_depth, channel_depth, line_buffer_depth;
    uint32_t pool_window_slots, pool_max_stride;
    uint32_t param_width;
    bool packing, queued_starts;
    uint32_t bus_bytes, desc_words;
} cc_hw;

/* The queue's state (Q_STATUS, Q_CURRENT, Q_COMPLETED). */
typedef struct cc_queue_status {
    bool busy, done;
    uint32_t error;         /* Q_STATUS.q_error: CONVCORE_DMA_QUEUE_ERRORS; 0 none */
    uint32_t engine_error;  /* Q_STATUS.q_engine_error when error is ENGINE */
    uint32_t current;       /* the descriptor that runs, failed, or ran last */
    uint32_t completed;     /* descriptors whose output is in memory since the run */
} cc_queue_status;

/* Counters: the queue's run (Q_CYCLES, Q_COMPLETED) and the engine's last layer. */
typedef struct cc_counters {
    uint64_t queue_cycles;
    uint32_t completed;
    uint64_t cycles, mac_cycles, starved_cycles, stalled_cycles;
} cc_counters;

/* Hooks for a CPU: ctx is the base address of the port, accessed as volatile 32-bit words. */
uint32_t cc_mmio_read32(void *ctx, uint32_t offset);
void cc_mmio_write32(void *ctx, uint32_t offset, uint32_t value);

/* Set up dev with the hooks and check Q_HW (CC_ERR_NO_DEVICE). */
int cc_init(cc_device *dev, cc_read32_fn read32, cc_write32_fn write32, void *ctx);
int cc_init_mmio(cc_device *dev, volatile void *base);

/* The hardware parameters; CC_ERR_BUSY while the queue runs. */
int cc_read_hw(const cc_device *dev, cc_hw *hw);

/* Run the queue from the descriptor at head; irq: Q_IRQ_ENABLE (irq rises when it ends).
 * CC_ERR_BUSY when it runs already. */
int cc_queue_start(const cc_device *dev, uint32_t head, bool irq);

/* Read the queue's state: CC_RUNNING, CC_OK (ended, every descriptor ran), or CC_ERR_QUEUE
 * (ended at a failing descriptor). An irq handler calls it too. */
int cc_queue_poll(const cc_device *dev, cc_queue_status *st);

/* Poll until the queue ends, at most max_polls reads of Q_STATUS (CC_ERR_TIMEOUT); then as
 * cc_queue_poll. */
int cc_queue_wait(const cc_device *dev, uint32_t max_polls, cc_queue_status *st);

/* cc_queue_start (no irq) and cc_queue_wait. */
int cc_run_queue(const cc_device *dev, uint32_t head, uint32_t max_polls, cc_queue_status *st);

/* Run the one descriptor at desc (its next word 0): cc_run_queue, and CC_ERR_CHAIN when more
 * than one descriptor ran. */
int cc_run_layer(const cc_device *dev, uint32_t desc, uint32_t max_polls, cc_queue_status *st);

/* The counters; the engine's are those of the last layer and read only once the queue has
 * ended (CC_ERR_BUSY, the queue's counters filled in, the engine's 0). */
int cc_read_counters(const cc_device *dev, cc_counters *c);

/* Names and texts of the codes ("ALIGN", "an address or stride is not ..."); "unknown" for a
 * code the hardware this driver was built for does not have. */
const char *cc_queue_error_name(uint32_t error);
const char *cc_queue_error_text(uint32_t error);
const char *cc_engine_error_name(uint32_t error);
const char *cc_engine_error_text(uint32_t error);
const char *cc_rc_text(int rc);

#ifdef __cplusplus
}
#endif

#endif /* CONVCORE_H */
