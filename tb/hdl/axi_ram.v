// AXI4 subordinate RAM: a simulation model of memory for the DMA front end (soc_top.v), in
// Verilog-2005 for Icarus Verilog 11 and Verilator 5. Not for synthesis (plusargs, files).
//
// Ports `s_axi_*`: exactly the members of rtl/axi4.py's AXI4Signature (no *lock, *qos,
// *region, *user), 32-bit addresses; the RAM holds 2**ADDR_WIDTH bytes and decodes the low
// ADDR_WIDTH address bits.
//
// - INCR bursts of full-width beats (AxSIZE = log2 of the data bytes), one beat per cycle on
//   reads and on writes, wstrb honoured. A burst whose address has a bit set at or above
//   ADDR_WIDTH is answered DECERR on every beat (reads return zeros, writes change nothing);
//   a FIXED or WRAP burst, or a narrow one, is answered SLVERR likewise. An AXI4 burst never
//   crosses 4 KiB, so a burst that starts inside the RAM (ADDR_WIDTH >= 12) ends inside it.
// - Reads: up to AR_DEPTH addresses are accepted ahead of their data and answered in the order
//   they came (legal for any IDs), each burst's first beat no earlier than READ_LATENCY cycles
//   after its address was accepted; bursts follow each other with no idle cycle.
// - Writes: one burst at a time (AW, its W beats, then B; one idle cycle between bursts).
//
// Bulk load: at time 0 every word is zero, then $readmemh of the file named by the plusarg
// +mem=<file> (one DATA_WIDTH-bit word a line, `@<hex word address>` lines allowed; word
// address = byte address / (DATA_WIDTH/8); sim/memory_image.py writes it). No +mem: all zeros.
// Bulk dump: at a rising clock edge with `dump` high, $writememh of the whole RAM to the file
// named by +dump=<file> (sim/memory_image.py reads it back).
module axi_ram #(
  parameter ADDR_WIDTH   = 20,   // bytes of the RAM: 2**ADDR_WIDTH
  parameter DATA_WIDTH   = 64,   // 32..512, a power of two
  parameter ID_WIDTH     = 2,
  parameter AR_DEPTH     = 8,    // read addresses accepted ahead of their data (a power of two)
  parameter READ_LATENCY = 0     // cycles from a read address's acceptance to its first beat
) (
  input  wire                    clk,
  input  wire                    rst,
  input  wire                    dump,

  input  wire [ID_WIDTH-1:0]     s_axi_awid,
  input  wire [31:0]             s_axi_awaddr,
  input  wire [7:0]              s_axi_awlen,
  input  wire [2:0]              s_axi_awsize,
  input  wire [1:0]              s_axi_awburst,
  input  wire [3:0]              s_axi_awcache,
  input  wire [2:0]              s_axi_awprot,
  input  wire                    s_axi_awvalid,
  output wire                    s_axi_awready,
  input  wire [DATA_WIDTH-1:0]   s_axi_wdata,
  input  wire [DATA_WIDTH/8-1:0] s_axi_wstrb,
  input  wire                    s_axi_wlast,
  input  wire                    s_axi_wvalid,
  output wire                    s_axi_wready,
  output reg  [ID_WIDTH-1:0]     s_axi_bid,
  output reg  [1:0]              s_axi_bresp,
  output reg                     s_axi_bvalid,
  input  wire                    s_axi_bready,

  input  wire [ID_WIDTH-1:0]     s_axi_arid,
  input  wire [31:0]             s_axi_araddr,
  input  wire [7:0]              s_axi_arlen,
  input  wire [2:0]              s_axi_arsize,
  input  wire [1:0]              s_axi_arburst,
  input  wire [3:0]              s_axi_arcache,
  input  wire [2:0]              s_axi_arprot,
  input  wire                    s_axi_arvalid,
  output wire                    s_axi_arready,
  output reg  [ID_WIDTH-1:0]     s_axi_rid,
  output reg  [DATA_WIDTH-1:0]   s_axi_rdata,
  output reg  [1:0]              s_axi_rresp,
  output reg                     s_axi_rlast,
  output reg                     s_axi_rvalid,
  input  wire                    s_axi_rready
);

  // Derived widths; illegal parameters stop elaboration.
  localparam STRB_WIDTH = DATA_WIDTH / 8;
  localparam WORD_SHIFT = $clog2(STRB_WIDTH);          // byte address -> word address
  localparam WORDS      = 1 << (ADDR_WIDTH - WORD_SHIFT);
  localparam WADDR_W    = ADDR_WIDTH - WORD_SHIFT;
  localparam QUEUE_W    = $clog2(AR_DEPTH);
  localparam [1:0] OKAY = 2'b00, SLVERR = 2'b10, DECERR = 2'b11;
  localparam [1:0] BURST_INCR = 2'b01;

  generate
    if (DATA_WIDTH < 32 || DATA_WIDTH > 512 || (DATA_WIDTH & (DATA_WIDTH - 1)) != 0)
      begin : bad_data_width initial $fatal(1, "axi_ram: DATA_WIDTH must be a power of two 32..512, not %0d",
                     DATA_WIDTH); end
    if (ADDR_WIDTH < 12 || ADDR_WIDTH > 32)
      begin : bad_addr_width initial $fatal(1, "axi_ram: ADDR_WIDTH must be 12..32 (a burst may span 4 KiB), not %0d",
                     ADDR_WIDTH); end
    if (AR_DEPTH < 2 || (AR_DEPTH & (AR_DEPTH - 1)) != 0)
      begin : bad_ar_depth initial $fatal(1, "axi_ram: AR_DEPTH must be a power of two of at least 2, not %0d",
                     AR_DEPTH); end
  endgenerate

  reg [DATA_WIDTH-1:0] mem [0:WORDS-1];

  // Members the model does not read: bursts end at wlast; cache and protection are ignored.
  wire unused = &{1'b0, s_axi_awlen, s_axi_awcache, s_axi_awprot, s_axi_arcache,
                  s_axi_arprot};

  // The answer to a burst: DECERR beyond the RAM, SLVERR for what the model does not do.
  function [1:0] answer(input [31:0] addr, input [2:0] size, input [1:0] burst);
    begin
      if (ADDR_WIDTH < 32 && (addr >> ADDR_WIDTH) != 0) answer = DECERR;
      else if (burst != BURST_INCR || {29'd0, size} != WORD_SHIFT) answer = SLVERR;
      else answer = OKAY;
    end
  endfunction

  // --- bulk load and dump ------------------------------------------------------------------
  reg [8*1024-1:0] mem_file, dump_file;
  reg have_dump;
  integer i;
  initial begin
    for (i = 0; i < WORDS; i = i + 1) mem[i] = {DATA_WIDTH{1'b0}};
    have_dump = $value$plusargs("dump=%s", dump_file);
    if ($value$plusargs("mem=%s", mem_file)) $readmemh(mem_file, mem);
  end

  always @(posedge clk) begin
    if (dump) begin
      if (!have_dump) $fatal(1, "axi_ram: dump asked but no +dump=<file> plusarg");
      $writememh(dump_file, mem);
    end
  end

  // --- writes ------------------------------------------------------------------------------
  reg                w_active = 1'b0;
  reg [WADDR_W-1:0]  w_word;
  reg [1:0]          w_resp;
  integer b;

  assign s_axi_awready = !w_active && !s_axi_bvalid;
  assign s_axi_wready  = w_active;

  always @(posedge clk) begin
    if (rst) begin
      w_active <= 1'b0;
      s_axi_bvalid <= 1'b0;
    end else begin
      if (s_axi_bvalid && s_axi_bready) s_axi_bvalid <= 1'b0;
      if (s_axi_awvalid && s_axi_awready) begin
        w_active <= 1'b1;
        w_word <= s_axi_awaddr[ADDR_WIDTH-1:WORD_SHIFT];
        w_resp <= answer(s_axi_awaddr, s_axi_awsize, s_axi_awburst);
        s_axi_bid <= s_axi_awid;
      end
      if (s_axi_wvalid && s_axi_wready) begin
        if (w_resp == OKAY)
          for (b = 0; b < STRB_WIDTH; b = b + 1)
            if (s_axi_wstrb[b]) mem[w_word][8*b +: 8] <= s_axi_wdata[8*b +: 8];
        w_word <= w_word + 1'b1;
        if (s_axi_wlast) begin
          w_active <= 1'b0;
          s_axi_bvalid <= 1'b1;
          s_axi_bresp <= w_resp;
        end
      end
    end
  end

  // --- reads -------------------------------------------------------------------------------
  // Accepted read addresses, oldest first.
  reg [ID_WIDTH-1:0] q_id    [0:AR_DEPTH-1];
  reg [WADDR_W-1:0]  q_word  [0:AR_DEPTH-1];
  reg [7:0]          q_len   [0:AR_DEPTH-1];
  reg [1:0]          q_resp  [0:AR_DEPTH-1];
  reg [31:0]         q_stamp [0:AR_DEPTH-1];
  reg [QUEUE_W-1:0]  q_head = 0, q_tail = 0;
  reg [QUEUE_W:0]    q_count = 0;
  reg [31:0]         now = 0;             // cycles since reset (the latency's clock)

  // The burst being answered.
  reg                r_active = 1'b0;
  reg [ID_WIDTH-1:0] r_id;
  reg [WADDR_W-1:0]  r_word;
  reg [7:0]          r_left;              // beats after the next one
  reg [1:0]          r_resp;

  assign s_axi_arready = q_count != AR_DEPTH;

  // The next beat: of the burst being answered, else of the oldest address once due.
  wire               head_due   = q_count != 0
                                && (READ_LATENCY == 0 || now - q_stamp[q_head] >= READ_LATENCY);
  wire               beat_ready = r_active || head_due;
  wire [ID_WIDTH-1:0] beat_id   = r_active ? r_id   : q_id[q_head];
  wire [WADDR_W-1:0] beat_word  = r_active ? r_word : q_word[q_head];
  wire [7:0]         beat_left  = r_active ? r_left : q_len[q_head];
  wire [1:0]         beat_resp  = r_active ? r_resp : q_resp[q_head];
  wire               take_beat  = beat_ready && (!s_axi_rvalid || s_axi_rready);
  wire               pop        = take_beat && !r_active;
  wire               push       = s_axi_arvalid && s_axi_arready;

  always @(posedge clk) begin
    if (rst) begin
      q_head <= 0;
      q_tail <= 0;
      q_count <= 0;
      now <= 0;
      r_active <= 1'b0;
      s_axi_rvalid <= 1'b0;
    end else begin
      now <= now + 1;
      if (push) begin
        q_id[q_tail] <= s_axi_arid;
        q_word[q_tail] <= s_axi_araddr[ADDR_WIDTH-1:WORD_SHIFT];
        q_len[q_tail] <= s_axi_arlen;
        q_resp[q_tail] <= answer(s_axi_araddr, s_axi_arsize, s_axi_arburst);
        q_stamp[q_tail] <= now;
        q_tail <= q_tail + 1'b1;
      end
      if (pop) q_head <= q_head + 1'b1;
      q_count <= q_count + push - pop;
      if (take_beat) begin
        s_axi_rvalid <= 1'b1;
        s_axi_rid <= beat_id;
        s_axi_rdata <= beat_resp == OKAY ? mem[beat_word] : {DATA_WIDTH{1'b0}};
        s_axi_rresp <= beat_resp;
        s_axi_rlast <= beat_left == 0;
        r_active <= beat_left != 0;
        r_id <= beat_id;
        r_word <= beat_word + 1'b1;
        r_left <= beat_left - 1'b1;
        r_resp <= beat_resp;
      end else if (s_axi_rready) begin
        s_axi_rvalid <= 1'b0;
      end
    end
  end
endmodule
